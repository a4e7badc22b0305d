"""Real-model experiments: loading, calibration, compression, surgery, evaluation, report."""
