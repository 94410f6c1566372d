"""Training: the Image2Audio model, its losses, callbacks, distribution and the
train / evaluate entry points. Composes `models`, `density`, `graph` and `data`."""
