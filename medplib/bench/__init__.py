"""Model benchmarks: `medplib bench moe` (dense vs MoE cost) and `medplib bench generate`
(KV-cache decoding speed and memory). Each prints one JSON document."""
