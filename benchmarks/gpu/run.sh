#!/usr/bin/env bash
# The GPU suite in one command (benchmarks/gpu/README.md); results under $OUT (default ./out).
cd "$(dirname "$0")/../.." && PYTHONPATH=. PYTHONUNBUFFERED=1 exec python3 -m benchmarks.gpu.suite "$@"
