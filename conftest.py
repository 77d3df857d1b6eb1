"""Test-wide settings: SMALL mode, offline, no plot windows (unless set otherwise)."""

import os

os.environ.setdefault("COURSE_MODE", "small")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
