"""qmail-inject and sendmail: complete a locally submitted message's header and queue it (queue.md §8)."""
