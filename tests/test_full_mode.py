"""FULL mode of the three QLoRA tunes, checked without the Hub or a GPU.

Each section reads its notebook's own code (``helpers.notebook_code``), so what is checked is
what a learner runs: the stand-ins and meta-device models stand in for the downloads.
"""

# =========================================================================================
# Notebook 04: Mistral-7B-Instruct replies to YouTube comments
# =========================================================================================


# (end of the 04 section)


# =========================================================================================
# Notebook 05: the Phi-2 summarizer
# =========================================================================================


# (end of the 05 section)


# =========================================================================================
# Notebook 06: phi-1.5 on DS-1000
# =========================================================================================


# (end of the 06 section)
