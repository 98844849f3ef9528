"""Peers: Hugging Face transformers' LlamaForCausalLM on the very weights the engines run.

  hf_eager    the model as transformers runs it (DynamicCache), no compilation.
  hf_compile  a StaticCache and the forward compiled with torch.compile (mode "reduce-overhead",
              i.e. CUDA graphs, on GPU; inductor's default mode on CPU). Prefill runs eagerly into the
              static cache, as transformers' own generate() does; every decode step is compiled. The
              cache is sized for each measured point (fit: the TTFT length, or the decode context plus
              its tokens), as generate() sizes it for its request: transformers' attention reads every
              slot of a static cache, filled or not (and repeats K and V for GQA), so a cache sized for
              the run's longest context slowed the shorter ones. Session 23, two runs on H200s: 157.4
              and 157.6 tok/s at context 512 with the cache of a 2048 run (2,432 positions), 169.4
              with one of 768.
Variants: dtypes (on CPU fp32 and bf16, on GPU fp16) x attention implementations (on GPU "sdpa" and
"eager": with torch 2.11 on an H200, sdpa picked cuDNN attention, which builds a plan for every new KV
length, ~2 ms of CPU per layer per decode step, so eager attention decoded ~3x faster there). Every
variant is measured; the best at each point is the one reported, named in its label (all are in the
JSON). hf_compile runs with the first attention implementation only. Each step returns only once the
last position's logits are on the host, like the engines.
"""

import numpy as np

PEERS = ("hf_eager", "hf_compile")


def default_dtypes(device: str) -> list:
    return ["float32", "bfloat16"] if device == "cpu" else ["float16"]


def default_attn(device: str) -> list:
    return ["sdpa"] if device == "cpu" else ["sdpa", "eager"]


DTYPE_PRECISION = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16"}


class HFRunner:
    kind = "peer"

    def __init__(self, name, model, dtype, device, max_context, attn="sdpa", compile_mode=None):
        import torch
        from transformers import DynamicCache, StaticCache

        if name not in PEERS:
            raise ValueError(f"unknown peer {name!r} (known: {', '.join(PEERS)})")
        self.name, self.dtype, self.device = name, dtype, device
        self.label = f"{name} ({DTYPE_PRECISION.get(dtype, dtype)}, {attn})"
        self.attn = attn
        self.precision = DTYPE_PRECISION.get(dtype, dtype)
        self.model = model
        self.max_context = int(max_context)
        self._torch = torch
        self._dynamic = DynamicCache
        self.pos = 0
        self.static = name == "hf_compile"
        self.fwd = model.forward
        if self.static:
            self.cache = StaticCache(config=model.config, max_cache_len=self.max_context)
            self._caches = {self.max_context: self.cache}  # by size: fit() returns to one it made before
            mode = compile_mode or ("reduce-overhead" if device == "cuda" else "default")
            self.compile_mode = mode
            # dynamic=False: each cache size gets its own static graph (fit), not one traced for any length
            self.fwd_decode = torch.compile(model.forward, mode=mode, fullgraph=True, dynamic=False)
        else:
            self.cache = DynamicCache(config=model.config)
            self.compile_mode = None
            self.fwd_decode = model.forward

    def fit(self, n):
        """hf_compile: an empty static cache of n positions where n differs from the current one. One cache
        is kept per size, so the compiled step is traced once per size (its graphs are tied to the cache's
        tensors): a bench's decode modes visit the same contexts, and a new cache each time would compile
        twice as often. hf_eager: nothing (its cache grows as it goes)."""
        n = int(n)
        if not self.static or n == self.max_context:
            return
        cache = self._caches.get(n)
        if cache is None:
            from transformers import StaticCache

            cache = self._caches[n] = StaticCache(config=self.model.config, max_cache_len=n)
        else:
            with self._torch.no_grad():
                cache.reset()
        self.cache, self.max_context, self.pos = cache, n, 0

    def reset(self):
        if self.static:
            with self._torch.no_grad():
                self.cache.reset()
        else:
            self.cache = self._dynamic(config=self.model.config)
        self.pos = 0

    def _use_attn(self):
        """Runners of several attention implementations share one model: set this runner's before it runs
        (a no-op when it is set already, as in the sequential plan)."""
        if self.model.config._attn_implementation != self.attn:
            self.model.set_attn_implementation(self.attn)

    def _step(self, fwd, tokens):
        torch = self._torch
        self._use_attn()
        n = len(tokens)
        if self.pos + n > self.max_context:
            raise ValueError(f"{self.label}: {self.pos} + {n} positions exceed the cache of {self.max_context}")
        dev = self.device
        # A view of the 1-D ids, not numpy's [None, :] (stride 0 on the new axis): the compiled step guards on
        # strides, and generate()'s ids are (1, 1)-strided; with numpy's, the logits mode compiled again.
        ids = torch.as_tensor(np.asarray(tokens, dtype=np.int64), device=dev).view(1, n)
        pos = torch.arange(self.pos, self.pos + n, device=dev)[None, :]
        with torch.no_grad():  # not inference_mode: the static cache's tensors are reset in place later
            out = fwd(input_ids=ids, position_ids=pos, past_key_values=self.cache, use_cache=True, logits_to_keep=1)
            logits = out.logits[0, -1].float().cpu().numpy()  # on the host, like the engines
        self.pos += n
        return logits

    def prefill(self, tokens):
        return self._step(self.fwd, tokens)

    def decode(self, token):
        return self._step(self.fwd_decode, [int(token)])

    def generate(self, token, n):
        """Greedy: argmax on the model's device, fed back as a device tensor; one host copy at the end."""
        torch = self._torch
        if self.pos + n > self.max_context:
            raise ValueError(f"{self.label}: {self.pos} + {n} positions exceed the cache of {self.max_context}")
        self._use_attn()
        dev = self.device
        ids = torch.tensor([[int(token)]], dtype=torch.int64, device=dev)
        out = []
        with torch.no_grad():
            for _ in range(n):
                pos = torch.arange(self.pos, self.pos + 1, device=dev)[None, :]
                o = self.fwd_decode(input_ids=ids, position_ids=pos, past_key_values=self.cache, use_cache=True,
                                    logits_to_keep=1)
                ids = o.logits[:, -1].argmax(-1, keepdim=True)
                out.append(ids)
                self.pos += 1
            return torch.cat(out).view(-1).cpu().numpy()

    def close(self):
        self.model = self.cache = self.fwd = self.fwd_decode = self._caches = None


def load_peer_model(model_dir, dtype, device, attn_implementation="sdpa"):
    from lab.reference import load_reference

    return load_reference(model_dir, dtype=dtype, device=device, attn_implementation=attn_implementation)
