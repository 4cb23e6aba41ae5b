"""Files: images (TIFF, PNG, Zarr), OME-Zarr metadata, checkpoints, sample tables, block
streaming and the one atomic writer. Nothing here trains or denoises."""
