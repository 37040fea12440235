-- Data Box orders (issue 17): the order's SKU, and the notices iewatch watches beside the
-- state (packages with tracking numbers, a stage waiting for the customer, delay notices)
-- as JSON, so that a restart compares a new poll with what was announced before.
ALTER TABLE jobs ADD COLUMN sku TEXT;
ALTER TABLE jobs ADD COLUMN notices TEXT;
