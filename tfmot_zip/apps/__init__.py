"""Applications built on the library: the model zoo, the demo job and the TFLite chain."""
