"""What tests/ and scripts/ share: Debian's Chromium and a served app (`chromium`), a protocol-level
Streamlit client, and the soak, browser-benchmark and classroom-load runs whose figures the docs quote.

Run from the checkout's root: `python -m harness.soak`, `python -m harness.bench_browser`,
`python -m harness.load_classroom`. The tests import these modules (pytest puts the root on the path).
"""
