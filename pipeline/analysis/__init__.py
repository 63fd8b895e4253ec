"""Analysis and reporting: tables and figures from the stages' small output files."""
