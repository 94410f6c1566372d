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
