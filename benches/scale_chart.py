"""The scale curve's chart: scale.json (from benches/scale.rs) to a PNG.

    python scale_chart.py scale.json scale.png

Left: p50 latency of each operation against the number of keys (at the
smallest agent count); middle: the same against the number of agents;
right: each role's peak memory against the number of keys.
"""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

OPS = ["plan+record", "locate", "put", "checkpresent", "get"]

rows = json.load(open(sys.argv[1]))
fewest = min(r["agents"] for r in rows)
by_keys = sorted((r for r in rows if r["agents"] == fewest), key=lambda r: r["keys"])
sweep_at = max((r["keys"] for r in rows), key=lambda k: sum(r["keys"] == k for r in rows))
by_agents = sorted((r for r in rows if r["keys"] == sweep_at), key=lambda r: r["agents"])

fig, ax = plt.subplots(1, 3, figsize=(16, 5))
for op in OPS:
    ax[0].plot([r["keys"] for r in by_keys], [r["ms"][op][0] for r in by_keys], marker="o", label=op)
    ax[1].plot([r["agents"] for r in by_agents], [r["ms"][op][0] for r in by_agents], marker="o", label=op)
ax[0].set(xscale="log", yscale="log", xlabel="keys in the location log", ylabel="p50 latency (ms)",
          title=f"latency by keys ({fewest} agents)")
ax[1].set(yscale="log", xlabel="agents", ylabel="p50 latency (ms)", title=f"latency by agents ({sweep_at:,} keys)")
for name, field in [("coordinator", "coordinator_mib"), ("gateway", "gateway_mib"), ("agent (max)", "agent_max_mib")]:
    ax[2].plot([r["keys"] for r in by_keys], [r[field] for r in by_keys], marker="o", label=name)
ax[2].set(xscale="log", xlabel="keys in the location log", ylabel="peak RSS (MiB)", title="memory by keys")
for a in ax:
    a.grid(True, which="both", alpha=0.3)
    a.legend(fontsize=8)
fig.tight_layout()
fig.savefig(sys.argv[2], dpi=110)
