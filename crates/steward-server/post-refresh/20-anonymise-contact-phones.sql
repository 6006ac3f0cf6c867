-- Post-refresh sample: replace every contact's phone number with a fictitious one (the
-- 555-01xx range is reserved for fiction). The column exists from CRM 8.2 on.
-- requires: contacts.phone
UPDATE contacts SET phone = '+1-555-01' || substr('00' || (id % 100), -2, 2) WHERE phone IS NOT NULL;
