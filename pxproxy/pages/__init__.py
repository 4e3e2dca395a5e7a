"""The pages pxproxy shows browsers itself: the loading page and the HTML error pages."""
