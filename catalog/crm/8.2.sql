-- CRM 8.2: contact phone numbers, sales opportunities, account domains.

ALTER TABLE contacts ADD COLUMN phone TEXT;

CREATE TABLE opportunities (
    id           INTEGER PRIMARY KEY,
    account_id   INTEGER NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    contact_id   INTEGER REFERENCES contacts (id) ON DELETE SET NULL,
    name         TEXT NOT NULL,
    stage        TEXT NOT NULL DEFAULT 'prospecting'
                 CHECK (stage IN ('prospecting', 'qualified', 'proposal', 'won', 'lost')),
    amount_cents INTEGER NOT NULL DEFAULT 0 CHECK (amount_cents >= 0),
    close_date   TEXT,
    created_at   TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ', 'now'))
);
CREATE INDEX opportunities_account ON opportunities (account_id);

-- Accounts get a domain derived from their website: lower case, without the scheme,
-- a leading "www.", the path and any port.
ALTER TABLE accounts ADD COLUMN domain TEXT;
UPDATE accounts
SET domain = lower(trim(website))
WHERE website IS NOT NULL AND trim(website) <> '';
UPDATE accounts SET domain = substr(domain, 9) WHERE domain LIKE 'https://%';
UPDATE accounts SET domain = substr(domain, 8) WHERE domain LIKE 'http://%';
UPDATE accounts SET domain = substr(domain, 5) WHERE domain LIKE 'www.%';
UPDATE accounts SET domain = substr(domain, 1, instr(domain, '/') - 1) WHERE instr(domain, '/') > 0;
UPDATE accounts SET domain = substr(domain, 1, instr(domain, ':') - 1) WHERE instr(domain, ':') > 0;
UPDATE accounts SET domain = NULL WHERE domain = '';
CREATE INDEX accounts_domain ON accounts (domain);
