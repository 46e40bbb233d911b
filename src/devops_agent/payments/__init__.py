"""The payment gateway: demo mode (no money taken) and Stripe, with webhook handling."""
