"""The network: branch registry, RouterNet, cells, the sparse executor, cost accounting, checkpoints."""
