"""archlab pipeline: DVC stage entry points and their shared plumbing."""

import os

# TensorFlow's C++ start-up chatter (oneDNN, CPU features) hides the progress bars;
# this only sets a default the user's environment can override.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
