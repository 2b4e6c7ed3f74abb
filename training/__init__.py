"""Training data from real support logs, and (see `training.finetune`) the retriever's fine-tuning.

The data half runs one way::

    importers (slack, discord, zendesk, csv, jsonl, db)  →  Conversation
      → clean (noise out, PII redacted, near-duplicates out)
      → pairs (customer question + context → agent/bot answer, with resolution signals)
      → balance (topics, caps per topic and platform, a leak-free split by conversation and time)
      → export (OpenAI chat JSONL, sentence-transformers pairs with hard negatives)

`training.mining` turns agents' answers from resolved handoffs into proposed knowledge-base
entries that a person approves or rejects.
"""
