"""The bench tool's library (py/tools/bench.py is its CLI).

counting   bytes each decoded token must read, FLOPs of prefill/decode, per-engine precision tables
timing     runners timed the same way: TTFT, decode tok/s at a context; median and min-max
ceilings   the machine's read bandwidth and compute peak (CPU: lab._membw; GPU: torch)
peers      transformers on the same weights (hf_eager, hf_compile)
run        the plan: ceilings, engines, peers; derived numbers; output files
report     machine info, Markdown table, roofline plot, README injection
ppl_check  perplexity of every engine vs cpu_fp32's, flags past lab.tolerances.perplexity_rel
"""
