"""The model side (torch; the only code that knows architectures, through ``adapters``): loading a
model, its calibration second moments and the one moments accumulator (``moments``), block-by-block
input capture (``hooks``), installing, swapping, saving and loading low-rank factors (``lowrank``),
the sequential error-propagating compressor (``sequential``, which drives forward passes) and the
quantization noise of a GGUF file (``quantization``)."""
