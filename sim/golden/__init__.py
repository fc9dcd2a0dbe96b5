"""Integer golden model: the arithmetic every other part of psconv must match bit for bit."""
