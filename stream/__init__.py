"""The stream stage: a pure core (``stream.core``) and two runtimes that drive it."""
