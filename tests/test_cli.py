"""The command line: --help, --helpfull and exit codes (0 done, 1 failure
while running, 2 usage error)."""

from conftest import run_main


def test_help_exits_0_with_modes_common_flags_first_and_sections():
    result = run_main("--help")
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert text.startswith("i2a_tf: speech emotion recognition")
    for mode in ("prepare", "train", "evaluate", "export", "predict", "study"):
        assert f"\n  {mode} " in text
    common = text.index("Common flags:")
    for name in ("--mode=", "--flagfile=", "--workdir=", "--label_fraction=",
                 "--test_speakers=", "--seed=", "--model="):
        assert common < text.index("\n  " + name) < text.index("Corpora, classes and splits:"), name
    for section in ("Log-mel front end:", "Training:", "Export and predict:", "Study:"):
        assert section in text
    assert "--[no]use_translation (default: on)" in text
    assert "Exit codes:" in text
    assert "--verbosity" not in text  # absl's own flags only in --helpfull
    assert run_main("-h").stdout == text


def test_helpfull_adds_absl_flags():
    result = run_main("--helpfull")
    assert result.returncode == 0
    assert "Common flags:" in result.stdout and "--verbosity=" in result.stdout


def test_usage_errors_exit_2_naming_the_flag(tmp_path):
    for args, message in (
            (["--no_such_flag=1"], "Unknown command line flag 'no_such_flag'"),
            (["--label_fraction=abc"], "flag --label_fraction=abc"),
            ([f"--flagfile={tmp_path}/missing.cfg"], "missing.cfg"),
            (["--label_fraction=2"], "--label_fraction"),
            ([f"--workdir={tmp_path}", "--mode=prepare", "a.wav"],
             "only --mode=predict takes files")):
        result = run_main(*args)
        assert result.returncode == 2, (args, result.stderr[-2000:])
        assert message in result.stderr, (args, result.stderr[-2000:])


def test_native_noise_filter_by_hand():
    from i2a_tf.console import is_native_noise
    noise = [
        "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
        "I0000 00:00:1796052988.302115   13993 port.cc:153] oneDNN custom operations are on.",
        "W0000 00:00:1796052988.3 13993 tf_tfl_flatbuffer_helpers.cc:364] Ignored output_format.",
        "E0000 00:00:1796052990.772875   13993 cuda_platform.cc:52] failed call to cuInit: (303)",
        "To enable the following instructions: AVX2 AVX512F FMA, in other operations, rebuild",
        "fully_quantize: 0, inference_type: 6, input_inference_type: FLOAT32",
        "INFO: Created TensorFlow Lite XNNPACK delegate for CPU.",
    ]
    kept = [
        "E0000 00:00:1796052990.772875   13993 mlir_graph_optimization_pass.cc:1] real failure",
        "F0000 00:00:1796052990.772875   13993 cuda_platform.cc:52] Check failed: fatal",
        "I1130 15:36:36.362707 140129733438336 prepare.py:88] a Python log line",
        "15:37:42 prepared runs/demo/data: train_labeled 30 ...",
        "Traceback (most recent call last):",
        "error: --label_fraction=2: must be in (0, 1]",
    ]
    assert [line for line in noise if not is_native_noise(line)] == []
    assert [line for line in kept if is_native_noise(line)] == []


def test_quiet_console_unless_verbosity(tmp_path):
    args = ("--flagfile=configs/demo.cfg", "--mode=prepare", f"--workdir={tmp_path}",
            "--synthetic_speakers=4", "--synthetic_clips_per_class=2",
            "--synthetic_subjects=3", "--synthetic_images_per_class=1")
    quiet = run_main(*args)
    assert quiet.returncode == 0, quiet.stderr[-3000:]
    lines = quiet.stderr.splitlines()
    assert any("prepared" in line for line in lines)
    for line in lines:  # only the project's 'HH:MM:SS message' lines
        assert line[:2].isdigit() and line[2] == ":" and line[8] == " ", line
    loud = run_main(*args, "--verbosity=1")
    assert loud.returncode == 0
    assert "absl::InitializeLog()" in loud.stderr
    assert "prepare.py:" in loud.stderr  # absl's full prefix
