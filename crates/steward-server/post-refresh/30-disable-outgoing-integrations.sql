-- Post-refresh sample: switch off every integration that sends data out of the instance
-- (mail relays, webhooks). The table exists from CRM 9.0 on.
-- requires: integrations.outgoing, integrations.enabled
UPDATE integrations SET enabled = 0 WHERE outgoing = 1;
