"""Fleet plans: profiles, with their cards and the user's prices, into servers and cost."""
