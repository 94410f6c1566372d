"""One Image2Audio train step through `strategy.run` on N logical CPU devices.

Run as a script (logical devices must be set before TensorFlow starts):

  python tests/distributed_step.py NUM_DEVICES INIT_WEIGHTS OUT_NPZ

The global batch, the state (banks, pseudo-labels) and, via INIT_WEIGHTS, the
initial weights are the same for every NUM_DEVICES: the first run saves its
initial weights there, later runs load them. Writes every variable after the
step, and the logged losses, to OUT_NPZ.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from i2a_tf.training.distribution import configure_devices, make_strategy  # noqa: E402


def main(num_devices: int, init_path: str, out_path: str) -> None:
    import keras
    from training_fixtures import tiny_batch, tiny_config, tiny_model, set_tiny_state

    config = tiny_config(strategy="mirrored" if num_devices > 1 else "default",
                         num_cpu_devices=num_devices, dropout=0.0)
    configure_devices(config.train)
    keras.utils.set_random_seed(0)
    strategy = make_strategy(config.train)
    assert strategy.num_replicas_in_sync == num_devices
    with strategy.scope():
        model = tiny_model(config)
    if os.path.exists(init_path):
        model.load_weights(init_path)
    else:
        model.save_weights(init_path)
    set_tiny_state(model)
    batch = tiny_batch(global_batch=4)
    dataset = strategy.experimental_distribute_dataset(
        tf.data.Dataset.from_tensors(batch))

    @tf.function
    def step(distributed_batch):
        return strategy.run(model.train_step, args=(distributed_batch,))

    logs = step(next(iter(dataset)))
    logs = {k: strategy.experimental_local_results(v)[0] for k, v in logs.items()}
    arrays = {f"var:{v.path}": np.asarray(v.numpy()) for v in model.weights}
    arrays.update({f"log:{k}": np.asarray(v) for k, v in logs.items()})
    np.savez(out_path, **arrays)


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2], sys.argv[3])
