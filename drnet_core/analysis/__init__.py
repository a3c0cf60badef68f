"""What a trained network does: routed evaluation, trade-offs, pay-off, clusters, attributions, audits."""
