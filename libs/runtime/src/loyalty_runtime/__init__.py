"""What every loyalty service shares. Each concern lives in one module here, never copied."""
