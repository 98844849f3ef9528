"""The LLM inference lab: engines, model files, tokenizers, tools."""
