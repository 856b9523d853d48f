"""Facts about the providers: model aliases and endpoints, dated prices, token estimates."""
