"""Other tools run beside medseg on the same data, split, budget and machine (`medseg bench peer ...`).

* :mod:`medseg.bench.peers.nnunet`: `medseg bench peer nnunet DATA`, the comparison and its entry point
  :func:`~medseg.bench.peers.nnunet.bench_peer_nnunet` (``device="cuda"`` on a GPU);
* :mod:`medseg.bench.peers.install`: nnunetv2, pinned, installed beside torch with ``--no-deps``;
* :mod:`medseg.bench.peers.nnunet_dataset`: the dataset in nnU-Net's raw layout with medseg's folds;
* :mod:`medseg.bench.peers.wall_clock`: nnU-Net's poly learning rate on the wall clock;
* :mod:`medseg.bench.peers.nnunet_child`: the nnU-Net side, run in its own process (imports nnunetv2);
* :mod:`medseg.bench.peers.report`: the markdown table.
"""
