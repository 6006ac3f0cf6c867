-- Post-refresh sample: replace every contact's email address with a unique address at a
-- reserved domain, so a sandbox copy of production can never mail a real customer.
-- requires: contacts.email
UPDATE contacts SET email = 'contact-' || id || '@example.invalid' WHERE email IS NOT NULL;
