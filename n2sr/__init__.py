"""n2sr: Noise2SR self-supervised denoising for fluorescence-microscopy archives."""

__version__ = "0.1.0"
