"""Tokenizers of the lab: a small wrapper over `tokenizers.Tokenizer` read from a tokenizer dir.

A tokenizer dir holds tokenizer.json (+ tokenizer_config.json). `load_tokenizer(dir)` gives
encode / decode, BOS and EOS ids, `apply_chat_template` (tokenizer_config's Jinja template), and
`stream_decoder()`, which turns ids into text increments that never split a multi-byte UTF-8
character (byte-level BPE tokens can hold part of one).
"""

import json
from pathlib import Path

REPLACEMENT = "\ufffd"


def _token_content(tok):
    return tok.get("content") if isinstance(tok, dict) else tok


class StreamDecoder:
    """push(id) -> new text ('' while a character is incomplete); flush() -> whatever is left."""

    def __init__(self, tokenizer, skip_special_tokens=False):
        self._tok, self._skip = tokenizer, skip_special_tokens
        self._ids, self._prefix, self._read = [], 0, 0

    def _text(self, ids):
        return self._tok.decode(ids, skip_special_tokens=self._skip)

    def push(self, token_id: int) -> str:
        self._ids.append(int(token_id))
        before = self._text(self._ids[self._prefix : self._read])
        now = self._text(self._ids[self._prefix :])
        if len(now) > len(before) and not now.endswith(REPLACEMENT):
            self._prefix, self._read = self._read, len(self._ids)
            return now[len(before) :]
        return ""

    def flush(self) -> str:
        before = self._text(self._ids[self._prefix : self._read])
        now = self._text(self._ids[self._prefix :])
        self._prefix = self._read = len(self._ids)
        return now[len(before) :]


class Tokenizer:
    """encode(text, add_bos=None) / decode(ids) / stream_decoder(); bos_id, eos_ids, vocab_size."""

    def __init__(self, backend, config: dict):
        self.backend, self.config = backend, config
        self.bos_token = _token_content(config.get("bos_token"))
        self.eos_token = _token_content(config.get("eos_token"))
        self.bos_id = backend.token_to_id(self.bos_token) if self.bos_token else None
        eos = [backend.token_to_id(self.eos_token)] if self.eos_token else []
        eos += list(config.get("eos_token_ids", []))  # the lab's extra stop ids (e.g. Llama 3's <|eot_id|>)
        self.eos_ids = sorted({e for e in eos if e is not None})
        self.add_bos = config.get("add_bos_token")  # None: the post-processor decides
        self.vocab_size = backend.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str, add_bos=None) -> list:
        """Token ids; add_bos None follows tokenizer_config's add_bos_token (else the post-processor)."""
        add_bos = self.add_bos if add_bos is None else add_bos
        if add_bos is None:
            ids = self.backend.encode(text, add_special_tokens=True).ids
            if self.bos_id is not None and ids[:2] == [self.bos_id] * 2 and text.startswith(self.bos_token):
                ids = ids[1:]  # the text (e.g. a chat template) already starts with BOS
            return ids
        ids = self.backend.encode(text, add_special_tokens=False).ids
        if add_bos and self.bos_id is not None and ids[:1] != [self.bos_id]:
            ids = [self.bos_id] + ids
        return ids

    def decode(self, ids, skip_special_tokens=False) -> str:
        return self.backend.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

    def stream_decoder(self, skip_special_tokens=False) -> StreamDecoder:
        return StreamDecoder(self, skip_special_tokens)

    def apply_chat_template(self, prompt, system=None, add_generation_prompt=True) -> str:
        """The chat prompt text for one user message (or a list of {role, content} messages)."""
        template = self.config.get("chat_template")
        if not template:
            raise ValueError("this tokenizer has no chat_template (a base model?): use a plain prompt")
        from jinja2 import ext
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        def raise_exception(msg):
            raise ValueError(f"chat template: {msg}")

        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[ext.loopcontrols])
        env.globals["raise_exception"] = raise_exception
        messages = prompt if isinstance(prompt, list) else [{"role": "user", "content": prompt}]
        if system is not None:
            messages = [{"role": "system", "content": system}] + messages
        return env.from_string(template).render(
            messages=messages, add_generation_prompt=add_generation_prompt,
            bos_token=self.bos_token or "", eos_token=self.eos_token or "",
        )

    def token_to_id(self, token: str):
        return self.backend.token_to_id(token)

    def id_to_token(self, token_id: int):
        return self.backend.id_to_token(int(token_id))


def load_tokenizer(tokenizer_dir) -> Tokenizer:
    """The tokenizer in tokenizer_dir (FileNotFoundError says how to prepare one)."""
    from tokenizers import Tokenizer as Backend

    tokenizer_dir = Path(tokenizer_dir)
    path = tokenizer_dir / "tokenizer.json"
    if not path.exists():
        raise FileNotFoundError(
            f"{path} not found: prepare it with the model (bazel run //py:download -- --model=<hf id>, "
            f"//py:convert -- --hf_dir=<dir>, //py:synthetic -- --arch=<arch>; the embedded default "
            f"comes from lab.prepare.ensure_default_model())"
        )
    cfg_path = tokenizer_dir / "tokenizer_config.json"
    config = json.loads(cfg_path.read_text()) if cfg_path.exists() else {}
    return Tokenizer(Backend.from_file(str(path)), config)
