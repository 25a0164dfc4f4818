"""Clearing: cut-off, merchant settlement, net positions between institutions, the signed
Merkle log of the ledger with inclusion and consistency proofs, statements, e-receipts and
reconciliation of partners' files.

``merkle`` and ``verify`` use only the standard library and ``cryptography``, so a partner can
check statements and receipts without the rest of Lianjie.
"""

from lianjie.clearing.config import ClearingConfig
from lianjie.clearing.eod import STEPS, EodReport, run_end_of_day
from lianjie.clearing.log import (
    Finding,
    Head,
    consistency_proof,
    get_head,
    heads,
    inclusion_proof,
    verify_chain,
)
from lianjie.clearing.signing import Signer, load_signer
from lianjie.clearing.terms import do_set_net_debit_cap, do_set_settlement_terms

__all__ = [
    "STEPS",
    "ClearingConfig",
    "EodReport",
    "Finding",
    "Head",
    "Signer",
    "consistency_proof",
    "do_set_net_debit_cap",
    "do_set_settlement_terms",
    "get_head",
    "heads",
    "inclusion_proof",
    "load_signer",
    "run_end_of_day",
    "verify_chain",
]
