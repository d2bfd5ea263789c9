"""Event captioning with VLMs (vLLM engine, OpenAI-compatible servers, signal fallback)."""
