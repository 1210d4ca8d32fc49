"""The queue manager (qmail-send): preprocessing, scheduling, bounces."""
