"""Monitoring: feedback, metrics, reports, knowledge gaps, review queue, QA and the dashboard."""
