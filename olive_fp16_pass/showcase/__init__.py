"""The denoiser showcase, apart from the converter: what the shipped workflows need besides our passes.

- models/: the U-Net denoiser (definition, training script, shipped FP32 weights, photos and their sources);
- image_quality.py: fidelity and task metrics for images, the comparison picture;
- denoise_data.py, denoise_eval.py: the Olive dataset and the evaluator of the denoiser workflows;
- run_report.py: `olive-fp16 report`, the report of any workflow's output folder;
- workflow_guard.py: the CUDA guard a CUDA workflow runs first (exit 3 naming its CPU twin).

Needs the `olive` extra (Olive, scikit-image, Pillow; torch for models/); the core never imports it.
"""
