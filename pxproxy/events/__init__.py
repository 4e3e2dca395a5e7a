"""What happens in pxproxy, as events: produced once, fanned out to every reader (the
dashboard's SSE streams, webhooks) without any extra work per reader."""
