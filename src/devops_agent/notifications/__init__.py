"""Email and alerts: low-credit warnings, receipts, payment failures."""
