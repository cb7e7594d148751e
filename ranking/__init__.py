"""The downstream ranking model that measures what the codes are worth: a DIN-style ranker
fed with the codes, its metrics (AUC, UAUC, GAUC) and the evaluation that writes docs/results.md."""
