"""The admin API: tokens, teams, policies and usage for admin-scoped tokens."""
