-- CRM 9.1 (service release): normalised, indexed contact emails; open activities by due date.

UPDATE contacts SET email = lower(trim(email)) WHERE email IS NOT NULL;
UPDATE contacts SET email = NULL WHERE email = '';
CREATE INDEX contacts_email ON contacts (email);

CREATE INDEX activities_open_due ON activities (due_at) WHERE done = 0;
