//! Calendar questions in the proleptic Gregorian calendar, with reasoning-gym's seven sub-tasks.
//!
//! Answers by sub-task (metadata `task`):
//! - weekday tasks: the English weekday name in full, in any letter case (`Monday`, `monday`; not `Mon`);
//! - counting tasks and the day of a recurring event: a canonical integer;
//! - `is_leap_year`: `Yes` or `No`, in any letter case.

use std::fmt;

use rand::Rng;

use super::{pick, question, required, uniform};
use crate::numbers::parse_canonical_int;
use crate::{Difficulty, Metadata, Question, TaskFamily};

pub const WEEKDAYS: [&str; 7] = [
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
];
const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const ORDINALS: [&str; 5] = ["first", "second", "third", "fourth", "last"];

/// The sub-tasks, named as reasoning-gym names them (the metadata `task`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CalendarTask {
    WeekdayOffset,
    WeekdayOfDate,
    WeekdayOfDateFromFirstDate,
    RecurringEventDay,
    CountDays,
    CountBusinessDays,
    IsLeapYear,
}

impl CalendarTask {
    pub const ALL: [Self; 7] = [
        Self::WeekdayOffset,
        Self::WeekdayOfDate,
        Self::WeekdayOfDateFromFirstDate,
        Self::RecurringEventDay,
        Self::CountDays,
        Self::CountBusinessDays,
        Self::IsLeapYear,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::WeekdayOffset => "weekday_offset",
            Self::WeekdayOfDate => "weekday_of_date",
            Self::WeekdayOfDateFromFirstDate => "weekday_of_date_from_first_date",
            Self::RecurringEventDay => "recurring_event_day",
            Self::CountDays => "count_days",
            Self::CountBusinessDays => "count_business_days",
            Self::IsLeapYear => "is_leap_year",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|task| task.name() == name)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Params {
    /// Years dates are drawn from (clamped to 1..=9999).
    pub min_year: i32,
    pub max_year: i32,
    /// Largest day offset and counting span.
    pub max_offset: u32,
    /// Sub-tasks to draw from; all when empty.
    pub tasks: Vec<CalendarTask>,
}

impl Params {
    pub fn at(difficulty: Difficulty) -> Self {
        use CalendarTask::*;
        let (years, max_offset, tasks) = match difficulty.level() {
            1 => (0, 30, vec![WeekdayOfDate, IsLeapYear]),
            2 => (5, 60, vec![WeekdayOfDate, IsLeapYear, WeekdayOffset]),
            3 => (
                20,
                100,
                vec![
                    WeekdayOfDate,
                    IsLeapYear,
                    WeekdayOffset,
                    CountDays,
                    CountBusinessDays,
                ],
            ),
            4 => (50, 250, CalendarTask::ALL.to_vec()),
            _ => (200, 365, CalendarTask::ALL.to_vec()),
        };
        Self {
            min_year: 2022 - years,
            max_year: 2022 + years,
            max_offset,
            tasks,
        }
    }
}

/// A day of the proleptic Gregorian calendar.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Date {
    /// Days since 1970-01-01.
    days: i64,
}

impl Date {
    pub fn new(year: i32, month: u32, day: u32) -> Option<Self> {
        let valid = (1..=12).contains(&month) && day >= 1 && day <= days_in_month(year, month);
        valid.then(|| Self {
            days: days_from_civil(year.into(), month.into(), day.into()),
        })
    }

    /// `YYYY-MM-DD`, as Python's `date.isoformat()` writes it.
    pub fn parse_iso(text: &str) -> Option<Self> {
        let mut parts = text.splitn(3, '-');
        let (year, month, day) = (parts.next()?, parts.next()?, parts.next()?);
        fn number<T: std::str::FromStr>(text: &str, width: usize) -> Option<T> {
            let digits = text.len() == width && text.bytes().all(|b| b.is_ascii_digit());
            if digits { text.parse().ok() } else { None }
        }
        Self::new(number(year, 4)?, number(month, 2)?, number(day, 2)?)
    }

    pub fn civil(self) -> (i32, u32, u32) {
        let (year, month, day) = civil_from_days(self.days);
        (i32::try_from(year).unwrap_or(0), month as u32, day as u32)
    }

    /// 0 for Monday … 6 for Sunday (1970-01-01 was a Thursday).
    pub fn weekday(self) -> usize {
        (self.days + 3).rem_euclid(7) as usize
    }

    pub fn add_days(self, days: i64) -> Self {
        Self {
            days: self.days + days,
        }
    }

    pub fn days_until(self, later: Self) -> i64 {
        later.days - self.days
    }

    /// `Monday, March 13, 2024`.
    fn long(self) -> String {
        let (year, month, day) = self.civil();
        format!(
            "{}, {} {day}, {year}",
            WEEKDAYS[self.weekday()],
            MONTHS[month as usize - 1]
        )
    }
}

impl fmt::Display for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (year, month, day) = self.civil();
        write!(f, "{year:04}-{month:02}-{day:02}")
    }
}

pub fn is_leap_year(year: i32) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i32, month: u32) -> u32 {
    match month {
        2 if is_leap_year(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let day_of_year = (153 * (month + if month > 2 { -3 } else { 9 }) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    (year_of_era + era * 400 + i64::from(month <= 2), month, day)
}

/// The day of the month of the `ordinal` (`first` … `fourth`, `last`) `weekday` (0 = Monday) of a month.
pub fn recurring_event_day(year: i32, month: u32, ordinal: &str, weekday: usize) -> Option<u32> {
    let first = Date::new(year, month, 1)?;
    let first_match = 1 + (weekday + 7 - first.weekday()) % 7;
    let day = match ordinal {
        "last" => {
            let last_day = days_in_month(year, month);
            let last_weekday = Date::new(year, month, last_day)?.weekday();
            last_day - ((last_weekday + 7 - weekday) % 7) as u32
        }
        _ => {
            let n = ORDINALS.iter().position(|o| *o == ordinal)? as u32;
            first_match as u32 + 7 * n
        }
    };
    (day <= days_in_month(year, month)).then_some(day)
}

/// How many days from `start` to `end`, both included, fall on `weekday` (0 = Monday).
pub fn count_weekday(start: Date, end: Date, weekday: usize) -> i64 {
    (0..=start.days_until(end))
        .filter(|&i| start.add_days(i).weekday() == weekday)
        .count() as i64
}

/// How many days from `start` to `end`, both included, are Monday to Friday.
pub fn count_business_days(start: Date, end: Date) -> i64 {
    (0..=start.days_until(end))
        .filter(|&i| start.add_days(i).weekday() < 5)
        .count() as i64
}

pub fn generate<R: Rng + ?Sized>(params: &Params, rng: &mut R) -> Question {
    let tasks = if params.tasks.is_empty() {
        &CalendarTask::ALL[..]
    } else {
        &params.tasks[..]
    };
    let task = *pick(rng, tasks);
    let years = (
        params.min_year.clamp(1, 9998).into(),
        params.max_year.clamp(1, 9998).into(),
    );
    let year = i32::try_from(uniform(rng, years.0, years.1)).unwrap_or(2022);
    let max_offset = i64::from(params.max_offset.clamp(1, 3650));
    let year_start = Date::new(year, 1, 1).unwrap_or(Date { days: 0 });
    let year_length = if is_leap_year(year) { 366 } else { 365 };
    let random_day = |rng: &mut R| year_start.add_days(uniform(rng, 0, year_length - 1));
    let mut metadata = Metadata::from([("task".to_owned(), task.name().to_owned())]);
    let mut note = |key: &str, value: String| metadata.insert(key.to_owned(), value);
    let (prompt, answer) = match task {
        CalendarTask::WeekdayOffset => {
            let start = random_day(rng);
            let offset = uniform(rng, 1, max_offset) * if super::coin(rng) { 1 } else { -1 };
            note("start_date", start.to_string());
            note("offset_days", offset.to_string());
            let when = if offset > 0 {
                format!("will it be in {offset} days")
            } else {
                format!("was it {} days ago", -offset)
            };
            (
                format!(
                    "If today is {}, what day of the week {when}? Answer with the weekday's full name.",
                    start.long()
                ),
                WEEKDAYS[start.add_days(offset).weekday()].to_owned(),
            )
        }
        CalendarTask::WeekdayOfDate => {
            let date = random_day(rng);
            note("target_date", date.to_string());
            let (_, month, day) = date.civil();
            (
                format!(
                    "What day of the week was {} {day}, {year}? Answer with the weekday's full name.",
                    MONTHS[month as usize - 1]
                ),
                WEEKDAYS[date.weekday()].to_owned(),
            )
        }
        CalendarTask::WeekdayOfDateFromFirstDate => {
            let first = uniform(rng, 0, 6) as usize;
            let delta = uniform(rng, 1, max_offset.min(year_length - 1));
            let (_, month, day) = year_start.add_days(delta).civil();
            note("year", year.to_string());
            note("first_day", WEEKDAYS[first].to_owned());
            note("delta_days", delta.to_string());
            (
                format!(
                    "In a {} year whose January 1 falls on a {}, what day of the week is {} {day}? Answer with the \
                     weekday's full name.",
                    if is_leap_year(year) {
                        "leap"
                    } else {
                        "non-leap"
                    },
                    WEEKDAYS[first],
                    MONTHS[month as usize - 1]
                ),
                WEEKDAYS[(first + delta as usize) % 7].to_owned(),
            )
        }
        CalendarTask::RecurringEventDay => {
            let month = uniform(rng, 1, 12) as u32;
            let ordinal = *pick(rng, &ORDINALS);
            let weekday = uniform(rng, 0, 6) as usize;
            note("year", year.to_string());
            note("month", month.to_string());
            note("ordinal", ordinal.to_owned());
            note("weekday", WEEKDAYS[weekday].to_owned());
            (
                format!(
                    "A meeting is held on the {ordinal} {} of {} {year}. On which day of the month is it? Answer with \
                     a number.",
                    WEEKDAYS[weekday],
                    MONTHS[month as usize - 1]
                ),
                // Every month has at least four of each weekday, so every ordinal exists.
                recurring_event_day(year, month, ordinal, weekday)
                    .unwrap_or(0)
                    .to_string(),
            )
        }
        CalendarTask::CountDays | CalendarTask::CountBusinessDays => {
            let start = random_day(rng);
            let end = start.add_days(uniform(rng, 0, max_offset));
            note("start_date", start.to_string());
            note("end_date", end.to_string());
            if task == CalendarTask::CountDays {
                let weekday = uniform(rng, 0, 6) as usize;
                note("weekday", WEEKDAYS[weekday].to_owned());
                (
                    format!(
                        "How many {}s are there from {} to {} (both dates included)? Answer with a number.",
                        WEEKDAYS[weekday],
                        start.long(),
                        end.long()
                    ),
                    count_weekday(start, end, weekday).to_string(),
                )
            } else {
                (
                    format!(
                        "How many business days (Monday to Friday) are there from {} to {} (both dates included)? \
                         Answer with a number.",
                        start.long(),
                        end.long()
                    ),
                    count_business_days(start, end).to_string(),
                )
            }
        }
        CalendarTask::IsLeapYear => {
            note("year", year.to_string());
            (
                format!("Is {year} a leap year? Answer with Yes or No."),
                if is_leap_year(year) { "Yes" } else { "No" }.to_owned(),
            )
        }
    };
    question(TaskFamily::CalendarArithmetic, prompt, answer, metadata)
}

pub(crate) fn judge(question: &Question, answer: &str) -> Result<bool, String> {
    let name = required(question, "task")?;
    let task =
        CalendarTask::from_name(name).ok_or_else(|| format!("unknown calendar task {name:?}"))?;
    let truth = question.answer.as_str();
    let bad_truth = || format!("ground truth {truth:?} does not answer a {name} question");
    match task {
        CalendarTask::WeekdayOffset
        | CalendarTask::WeekdayOfDate
        | CalendarTask::WeekdayOfDateFromFirstDate => {
            if !WEEKDAYS.contains(&truth) {
                return Err(bad_truth());
            }
            Ok(answer.eq_ignore_ascii_case(truth))
        }
        CalendarTask::RecurringEventDay
        | CalendarTask::CountDays
        | CalendarTask::CountBusinessDays => {
            let truth = parse_canonical_int(truth).ok_or_else(bad_truth)?;
            Ok(parse_canonical_int(answer) == Some(truth))
        }
        CalendarTask::IsLeapYear => {
            if truth != "Yes" && truth != "No" {
                return Err(bad_truth());
            }
            Ok(answer.eq_ignore_ascii_case(truth))
        }
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::Xoshiro256PlusPlus;

    use super::*;
    use crate::verify;

    #[test]
    fn dates_match_known_days() {
        let date = |s| Date::parse_iso(s).unwrap();
        assert_eq!(WEEKDAYS[date("2024-03-13").weekday()], "Wednesday");
        assert_eq!(WEEKDAYS[date("2000-01-01").weekday()], "Saturday");
        assert_eq!(WEEKDAYS[date("1600-02-29").weekday()], "Tuesday");
        assert_eq!(date("2022-12-31").add_days(1).to_string(), "2023-01-01");
        assert_eq!(date("2024-02-28").add_days(1).to_string(), "2024-02-29");
        assert_eq!(Date::parse_iso("2023-02-29"), None);
        assert_eq!(Date::parse_iso("2023-2-28"), None);
        assert!(is_leap_year(2000) && !is_leap_year(1900) && is_leap_year(2024));
        // May 2024: Wednesday the 1st, so its second Tuesday is the 14th and its last Friday the 31st.
        assert_eq!(recurring_event_day(2024, 5, "second", 1), Some(14));
        assert_eq!(recurring_event_day(2024, 5, "last", 4), Some(31));
        assert_eq!(
            count_business_days(date("2024-03-01"), date("2024-03-15")),
            11
        );
        assert_eq!(count_weekday(date("2024-03-01"), date("2024-03-15"), 4), 3);
    }

    #[test]
    fn every_date_round_trips() {
        let start = Date::parse_iso("1800-01-01").unwrap();
        for offset in 0..200_000 {
            let date = start.add_days(offset);
            assert_eq!(Date::parse_iso(&date.to_string()), Some(date));
        }
    }

    #[test]
    fn generated_questions_verify_by_their_own_answer() {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(1);
        for level in 1..=5 {
            for _ in 0..300 {
                let q = generate(&Params::at(Difficulty::new(level)), &mut rng);
                assert!(q.check().is_ok(), "{q:?}");
                assert_eq!(verify(&q, &format!("<answer>{}</answer>", q.answer)), 1.0);
                assert_eq!(
                    verify(&q, &format!("<answer>{}</answer>", q.answer.to_lowercase())),
                    1.0
                );
                let mut wrong = vec![String::new(), format!("{}1", q.answer)];
                if let Some(i) = WEEKDAYS.iter().position(|d| *d == q.answer) {
                    wrong.extend([WEEKDAYS[(i + 1) % 7].to_owned(), q.answer[..3].to_owned()]);
                } else if let Ok(n) = q.answer.parse::<i64>() {
                    wrong.extend([(n + 1).to_string(), (n - 1).to_string(), format!("0{n}")]);
                } else {
                    wrong.extend([
                        if q.answer == "Yes" { "No" } else { "Yes" }.to_owned(),
                        "True".to_owned(),
                    ]);
                }
                crate::families::assert_rejected(&q, wrong);
            }
        }
    }

    #[test]
    fn knobs_change_the_range() {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(2);
        let params = Params {
            min_year: 1999,
            max_year: 1999,
            max_offset: 10,
            tasks: vec![CalendarTask::CountBusinessDays],
        };
        for _ in 0..100 {
            let q = generate(&params, &mut rng);
            assert_eq!(q.metadata["task"], "count_business_days");
            assert!(q.metadata["start_date"].starts_with("1999-"));
            assert!(q.answer.parse::<i64>().unwrap() <= 11);
        }
        let easy = Params::at(Difficulty::EASIEST);
        for _ in 0..50 {
            let task = generate(&easy, &mut rng).metadata["task"].clone();
            assert!(
                task == "weekday_of_date" || task == "is_leap_year",
                "{task}"
            );
        }
    }

    #[test]
    fn reproducible_for_a_seed() {
        let run = |seed| {
            let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
            (0..20)
                .map(|_| generate(&Params::at(Difficulty::new(5)), &mut rng))
                .collect::<Vec<_>>()
        };
        assert_eq!(run(5), run(5));
        assert_ne!(run(5), run(6));
    }
}
