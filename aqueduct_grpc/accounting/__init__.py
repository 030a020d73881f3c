"""Accounting and control: limits, budgets, prices, admission, the usage log and its report."""
