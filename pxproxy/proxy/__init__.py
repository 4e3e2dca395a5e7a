"""The HTTP reverse proxy: routes by Host to guests from the live inventory, wakes sleepers."""
