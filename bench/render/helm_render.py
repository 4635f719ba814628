"""Helm renders per second of the chart equivalent to the `web` Blueprint, with the real Helm library in process."""

import sys
import time
from pathlib import Path

from helm_python import chart as helm_chart

arg = sys.argv[1] if len(sys.argv) > 1 else "5"
chart = helm_chart.Chart.load(Path(__file__).parent / "chart")
if arg.endswith("x"):
    # COUNTx: exactly COUNT renders, no warm-up, so CPU time can be taken from outside.
    for _ in range(int(arg[:-1])):
        chart.render(name="checkout", namespace="shop")
    print(f"helm rendered {arg[:-1]} times")
    sys.exit(0)
seconds = float(arg)
out = chart.render(name="checkout", namespace="shop")
size = sum(len(v) for v in out.values())
kinds = sorted(line.split(":", 1)[1].strip() for v in out.values() for line in v.splitlines() if line.startswith("kind:"))
warm = time.perf_counter()
while time.perf_counter() - warm < 0.5:
    chart.render(name="checkout", namespace="shop")
n = 0
start = time.perf_counter()
while time.perf_counter() - start < seconds:
    for _ in range(20):
        chart.render(name="checkout", namespace="shop")
    n += 20
elapsed = time.perf_counter() - start
print(f"helm renders: {n} in {elapsed:.2f} s = {n / elapsed:.0f} renders/s, {elapsed * 1e6 / n:.1f} µs each, {size} bytes of YAML, kinds {kinds}")
