"""Benchmarks (`medseg bench ...`): speed, memory and accuracy measurements on medseg's public API.

``train`` (step time and loader wait), ``infer`` (medseg against MONAI pipelines), ``evaluate``
(one full-size case) and ``gpu`` (the one command a lent GPU runs: correctness, throughput,
accuracy and inference). Results go where ``-o`` says; the project keeps its own under ``reports/``.
"""
