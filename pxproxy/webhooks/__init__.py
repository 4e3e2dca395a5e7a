"""Events out: webhooks that tell an operator (or a bot) of wakes, idle stops and degraded
clusters without polling. They read the event hub like any other reader and never block it."""
