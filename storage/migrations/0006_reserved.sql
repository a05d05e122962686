-- 0006: reserved for the files migration of issue #13 (this placeholder goes when it lands).
SELECT 1;
