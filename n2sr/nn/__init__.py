"""Engines and numerics on tensors: the network, sub-sampler, objectives, blind spots, the
training loop and the inference engine. Nothing here opens a file."""
