-- CRM 8.0: base schema (accounts and contacts), built from an empty database.

CREATE TABLE accounts (
    id         INTEGER PRIMARY KEY,
    name       TEXT NOT NULL,
    industry   TEXT,
    website    TEXT,
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ', 'now'))
);
CREATE UNIQUE INDEX accounts_name ON accounts (name);

CREATE TABLE contacts (
    id         INTEGER PRIMARY KEY,
    account_id INTEGER REFERENCES accounts (id) ON DELETE SET NULL,
    full_name  TEXT NOT NULL,
    email      TEXT,
    job_title  TEXT,
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ', 'now'))
);
CREATE INDEX contacts_account ON contacts (account_id);

-- Sample data.
INSERT INTO accounts (id, name, industry, website, created_at) VALUES
    (1, 'Contoso Pharmaceuticals', 'Healthcare', 'https://www.contoso.example/', '2016-12-05T09:00:00Z'),
    (2, 'Fabrikam Logistics', 'Transport', 'http://fabrikam.example', '2016-12-05T09:05:00Z'),
    (3, 'Northwind Traders', 'Retail', NULL, '2016-12-05T09:10:00Z');

INSERT INTO contacts (id, account_id, full_name, email, job_title, created_at) VALUES
    (1, 1, 'Maria Campbell', 'Maria.Campbell@Contoso.example', 'Head of Purchasing', '2016-12-05T10:00:00Z'),
    (2, 1, 'Nancy Anderson', 'nancy.anderson@contoso.example', 'Buyer', '2016-12-05T10:01:00Z'),
    (3, 2, 'Jim Glynn van der Berg', ' JIM.GLYNN@FABRIKAM.EXAMPLE ', 'Operations Director', '2016-12-05T10:02:00Z'),
    (4, 3, 'Cher', NULL, 'Owner', '2016-12-05T10:03:00Z');
